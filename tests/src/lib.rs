//! End-to-end tests live in `tests/tests/`; guest apps in `tests/apps/`.
