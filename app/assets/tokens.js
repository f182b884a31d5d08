// The token strip: drawn here as plain spans from the tokens the server sends (a token's position is
// its data-index), again only for a new prompt or model; one click handler for every token, and the
// chosen destination marked in place, so choosing a token never re-draws the strip.
window.headscopeTokens = {
    show: function (strip, dest) {
        const box = document.getElementById("tokens");
        const key = strip ? JSON.stringify(strip.key) : "";
        if (box && box.dataset.drawn !== key) {
            box.dataset.drawn = key;
            box.replaceChildren();
            if (strip) {
                const count = document.createElement("span");
                count.className = "muted";
                count.textContent = strip.text.length + " tokens: ";
                box.appendChild(count);
                strip.text.forEach(function (text, i) {
                    const span = document.createElement("span");
                    span.className = "token";
                    span.dataset.index = i;
                    span.title = "position " + i + ", id " + strip.ids[i];
                    span.textContent = text;
                    box.appendChild(span);
                });
            }
        }
        document.querySelectorAll("#tokens .token").forEach(function (span) {
            span.classList.toggle("selected", Number(span.dataset.index) === dest);
        });
        return "click a token to choose the destination position";
    },
};

document.addEventListener("click", function (event) {
    const span = event.target.closest && event.target.closest("#tokens .token");
    if (span && window.dash_clientside && window.dash_clientside.set_props) {
        window.dash_clientside.set_props("token-click", {data: {index: Number(span.dataset.index), at: Date.now()}});
    }
});
