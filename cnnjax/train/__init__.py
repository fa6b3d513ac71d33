"""Training: state, pure steps, optimizers, losses, metrics, checkpoints, loop."""
