//! The component supervisor and `component.*` actions: not built yet.
