"""The checks of the workshop's exercises, one module per exercise, each with the known-wrong variants of its
part next to it (the mistakes workshop/catalogue.py lists). Every check compares the learner's part with the
project's own code: model.py, train.py, generate.py, experiments/ladder.py."""
