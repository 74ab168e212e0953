"""Reusable widgets: the navigation bar, gauges, curves and terminal charts."""
