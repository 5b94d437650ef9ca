"""The workshop: the learner writes the GPT's parts in exercise files, the tutor checks each one against
the project's own code, and the capstone trains a GPT built from them (docs/workshop.md)."""
