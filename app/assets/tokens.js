// The token strip: one click handler for every token (a token's position is its data-index), and the
// chosen destination marked in place, so choosing a token never re-draws the strip.
window.headscopeTokens = {
    mark: function (dest) {
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
