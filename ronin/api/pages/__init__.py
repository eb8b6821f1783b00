"""The dashboard: server-rendered HTML pages that a little JavaScript makes live."""
