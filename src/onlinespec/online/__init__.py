"""Online learning of the draft from verification feedback (docs/method.md §2): buffer, losses, learners, rounds."""
