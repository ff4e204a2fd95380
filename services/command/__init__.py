"""Goal commands: event-sourced Objective and Kpi aggregates behind HTTP."""
