"""Online learning of the draft from verification feedback (SPEC.md §2): buffer, losses, learners, rounds."""
