// The view state, routed to the store of the open tab (app.state.tab_view); the other tabs' stores are
// emptied once, so a view whose tab is closed is not called with a stale state when the model changes.
window.headscopeTabs = {
    route: function (view, tabs, held) {
        const none = window.dash_clientside.no_update;
        return tabs.map(function (tab, i) {
            if (view && view.tab === tab) {
                return view;
            }
            return held[i] ? null : none;
        });
    },
};
