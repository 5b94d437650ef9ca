"""
The machinery behind the five files a learner reads (model.py, train.py, generate.py, tokenizer.py,
data.py): settings and recipes, checkpoints, devices and precision, several processes, the guards that
stop a run cleanly, timings, results files and plots, the Muon optimizer, compiling the decode step.

Nothing here is needed to understand how a GPT works; everything here is needed for the commands to
be fast, resumable and safe. Imports point one way: these modules import model.py, data.py and
tokenizer.py, never train.py or generate.py.
"""
