"""
Experiments: each one trains models through train.py with different settings and writes what it
measured to experiments/results/<name>.json, then regenerates docs/results.md and docs/plots/.

    uv run python -m experiments.swaps all         # norm, mlp, pos, vanilla vs modern, KV cache
    uv run python -m experiments.tokenizers        # char vs BPE sizes vs GPT-2, in bits per character
    uv run python -m experiments.speed             # time to val loss 1.47 on one GPU
    uv run python -m experiments.ladder            # the learning path: a GPT built up one part at a time
    uv run python -m experiments.report            # rebuild the results table and plots from the JSON files

See experiments/README.md for what each measures and how long it takes.
"""
