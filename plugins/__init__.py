"""The built-in plugins: learners and suites, each registered through an entry point like any third-party plugin."""
