"""The standard plugins: native modules and prompt-function folders."""
