"""
The workshop: write a GPT's parts yourself, one exercise at a time, and let the tutor check each one.

    uv run workshop.py                 # progress, and the next exercise to do
    uv run workshop.py check 3         # check exercise 3 (or every exercise without a number)
    uv run workshop.py watch           # check the current exercise each time you save it
    uv run workshop.py hint 3          # the next hint for exercise 3
    uv run workshop.py solution 3      # where the project's own code for exercise 3 is, once yours passes
    uv run workshop.py reset 3         # put the blank exercise 3 back (asks first)
    uv run workshop.py capstone        # train a GPT made of your parts with the project's training loop

Your work is in mywork/ (--dir to choose another folder), which git ignores. How it works: docs/workshop.md.
"""

import sys

from workshop.runner import main

if __name__ == "__main__":
    sys.exit(main())
