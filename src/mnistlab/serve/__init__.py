"""The draw-a-digit page and JSON API (`mnistlab serve`); needs the `serve` extra."""
