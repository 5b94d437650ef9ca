"""The workshop's exercises keep their promises: a blank exercise fails saying what to write, the project's
own code passes every check (it is the reference, never a second copy of the solutions), every catalogued
mistake is named as itself and as no other, and every exercise and chapter lead to each other."""

import importlib.util
import re
import types
from pathlib import Path

import pytest
import torch

import generate
import model
import tokenizer
import train
from experiments import ladder
from workshop.catalogue import EXERCISES, MISTAKES
from workshop.checks.common import part_of
from workshop.checks.training_step import torch_adamw_step
from workshop.tutor import Failure

ROOT = Path(__file__).resolve().parents[1]
EXERCISE_DIR = ROOT / "workshop" / "exercises"

# The project's own parts, by exercise: what a learner's file holds when it imports them.
PROJECT_PARTS = {
    1: dict(count_baselines=ladder.count_baselines, counted_val_loss=ladder.counted_val_loss,
            bits_per_char=tokenizer.bits_per_char),
    2: dict(cross_entropy=torch.nn.functional.cross_entropy),
    3: dict(attention=model.attention),
    4: dict(CausalSelfAttention=model.CausalSelfAttention),
    5: dict(MLP=model.MLP),
    6: dict(LayerNorm=torch.nn.LayerNorm, Block=model.Block),
    7: dict(GPT=model.GPT),
    8: dict(get_lr=train.get_lr, clip_grad_norm_=torch.nn.utils.clip_grad_norm_, adamw_step=torch_adamw_step),
    9: dict(RMSNorm=model.RMSNorm),
    10: dict(SwiGLU=model.SwiGLU),
    11: dict(rope_tables=model.rope_tables, apply_rotary_emb=model.apply_rotary_emb),
    12: dict(causal_mask=model.causal_mask, KVCache=model.KVCache),
    13: dict(filter_logits=generate.filter_logits, sample_next=generate.sample_next),
}


def project_module(number: int) -> types.ModuleType:
    """A module holding the project's own code for an exercise, as `from model import attention` would."""
    module = types.ModuleType(f"project_parts_{number}")
    module.__dict__.update(PROJECT_PARTS[number])
    return module


def blank_module(exercise) -> types.ModuleType:
    path = EXERCISE_DIR / exercise.filename
    spec = importlib.util.spec_from_file_location(f"blank_{exercise.number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def failure_of(exercise, module) -> str:
    with pytest.raises(Failure) as failure:
        exercise.check(module)
    return str(failure.value)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.filename)
def test_a_blank_exercise_fails_saying_what_to_write(exercise):
    message = failure_of(exercise, blank_module(exercise))
    assert "is not written yet: " in message, message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.filename)
def test_the_projects_own_code_passes_its_exercise(exercise):
    exercise.check(project_module(exercise.number))


CASES = [(exercise, mistake) for exercise in EXERCISES for mistake in exercise.mistakes]


@pytest.mark.parametrize(("exercise", "mistake"), CASES,
                         ids=[f"{e.number}-{m.wrong.__name__}" for e, m in CASES])
def test_every_catalogued_mistake_is_named_as_itself_and_no_other(exercise, mistake):
    module = project_module(exercise.number)
    part = part_of(mistake) or next(iter(PROJECT_PARTS[exercise.number]))
    assert part in PROJECT_PARTS[exercise.number], f"{mistake.wrong.__name__} replaces an unknown part {part}"
    setattr(module, part, mistake.wrong)
    message = failure_of(exercise, module)
    assert mistake.name in message, message
    others = [m.name for m in exercise.mistakes if m is not mistake and m.name in message]
    assert not others, f"{mistake.name!r} is also named as {others}: {message}"


def test_the_catalogue_holds_at_least_30_mistakes_and_every_exercise_has_a_chapter_and_hints():
    assert len(MISTAKES) >= 30
    assert [e.number for e in EXERCISES] == list(range(1, len(EXERCISES) + 1))
    for exercise in EXERCISES:
        assert (ROOT / exercise.chapter).exists(), exercise.chapter
        assert 2 <= len(exercise.hints) <= 4, exercise.name
        assert exercise.reference and (EXERCISE_DIR / exercise.filename).exists()
        for reference in exercise.reference:
            file, _, name = reference.partition(":")
            assert re.search(rf"^\s*(def|class) {name.split('.')[-1]}\b", (ROOT / file).read_text(), re.M), reference


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.filename)
def test_an_exercise_and_its_chapter_link_to_each_other(exercise):
    text = (EXERCISE_DIR / exercise.filename).read_text()
    assert f"(../../{exercise.chapter})" in text, f"{exercise.filename} does not link to {exercise.chapter}"
    chapter = (ROOT / exercise.chapter).read_text()
    assert f"(../../workshop/exercises/{exercise.filename})" in chapter, f"{exercise.chapter} does not link back"
    assert f"uv run workshop.py check {exercise.number}" in chapter
