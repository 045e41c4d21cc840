"""Domain code shared by the Task handlers, the CLI and the reconciler."""
