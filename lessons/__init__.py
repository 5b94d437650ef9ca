"""
Lessons: what goes wrong when building and training a GPT, each made reproducible by one script that
shows the symptom and the fix, and checked by tests/test_lessons.py. See lessons/README.md.

    python -m lessons.rope_cache_offset    # RoPE positions wrong inside the KV cache
    python -m lessons.overfitting          # a model too large for its data, and early stopping
    python -m lessons.float16              # float16 without loss scaling: underflow and overflow
    python -m lessons.lost_run             # kill -9 in the middle of training, then --resume
    python -m lessons.one_thing_at_a_time  # bundled changes hide which one helped (the ladder's numbers)
"""
