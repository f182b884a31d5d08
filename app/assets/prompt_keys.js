// The prompt box: Enter runs the prompt, Shift+Enter inserts a line break (a newline would otherwise
// become a token of the analysed prompt and change the prediction being studied).
document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || !event.target || event.target.id !== "prompt") {
        return;
    }
    event.preventDefault();
    const run = document.getElementById("prompt-run");
    if (run) {
        run.click();
    }
}, true);
