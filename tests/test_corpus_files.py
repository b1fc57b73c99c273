"""A text file given to ``train`` has a stated meaning: a lone file is one pool split at random
(the sizes printed, the members exactly training texts, validation never left empty by the
defaults), a folder with train / test files trains on all of train (issue 21)."""

import json

import pytest

from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem.cli import main
from jaxmem.data import load_corpus


def _paragraphs(n, tag="p"):
    """n texts of the tiny tokenizer's words, no two near duplicates."""
    import numpy as np

    rng = np.random.default_rng(sum(map(ord, tag)))
    return [f"{tag}{i} " + " ".join(f"w{k}" for k in rng.integers(0, 90, 12)) for i in range(n)]


@pytest.fixture()
def lone(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("\n\n".join(_paragraphs(96)))
    return f


def test_a_lone_file_keeps_validation_with_default_sizes(lone):
    """Before: 48 train, 0 validation, 48 non-members; train then said "the validation set is
    empty" with no fix."""
    c = load_corpus(lone)
    assert (len(c.train), len(c.validation), len(c.nonmembers)) == (48, 16, 32)
    assert set(c.members) == set(c.train)  # every training text is a member
    assert not set(c.validation) & set(c.train) and not set(c.nonmembers) & set(c.train)
    assert not set(c.validation) & set(c.nonmembers)


def test_a_given_size_goes_first_and_a_default_takes_the_rest(lone):
    """Before: --n-validation 16 gave 1 validation text (shared in proportion with the default
    1,000 non-members)."""
    c = load_corpus(lone, n_validation=16)
    assert len(c.validation) == 16 and len(c.nonmembers) == 32
    c = load_corpus(lone, n_nonmembers=40)
    assert len(c.nonmembers) == 40 and len(c.validation) == 8
    c = load_corpus(lone, n_validation=8, n_nonmembers=8)  # both given: as asked
    assert (len(c.validation), len(c.nonmembers)) == (8, 8)


def test_describe_states_the_split_and_how_to_give_ones_own(lone, tmp_path):
    text = load_corpus(lone).describe()
    assert "one pool of 96 texts split at random (data seed 0)" in text
    assert "48 train (all 48 are the members), 16 validation, 32 non-members" in text
    assert "train.txt" in text and "test.txt" in text  # the fix
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "train.txt").write_text("\n\n".join(_paragraphs(20, "t")))
    (folder / "test.txt").write_text("\n\n".join(_paragraphs(12, "h")))
    c = load_corpus(folder)
    assert len(c.train) == 20 and "own train / test files" in c.describe()
    assert "To train on all" not in c.describe()


def test_train_prints_the_meaning_and_a_folder_trains_on_all_of_train(tmp_path, capsys):
    model = tmp_path / "model"
    tiny_hf_model("gpt2").save_pretrained(model)
    save_tiny_tokenizer(model)
    folder = tmp_path / "mydata"
    folder.mkdir()
    train = _paragraphs(20, "t")
    (folder / "train.txt").write_text("\n\n".join(train))
    (folder / "test.txt").write_text("\n\n".join(_paragraphs(12, "h")))
    run = tmp_path / "run"
    assert main(f"train --model {model} --run-dir {run} --method prompt --epochs 1 "
                f"--batch-size 4 --block-size 16 --corpus {folder}".split()) == 0
    err = capsys.readouterr().err
    assert "its own train / test files" in err and "20 train (all 20 are the members)" in err
    assert json.loads((run / "run.json").read_text())["n_train"] == 20


def test_a_file_too_small_for_validation_names_the_fix(tmp_path, capsys):
    model = tmp_path / "model"
    tiny_hf_model("gpt2").save_pretrained(model)
    save_tiny_tokenizer(model)
    f = tmp_path / "two.txt"
    f.write_text("\n\n".join(_paragraphs(2)))
    assert main(f"train --model {model} --run-dir {tmp_path / 'r'} --epochs 1 --batch-size 4 "
                f"--block-size 16 --corpus {f}".split()) == 2
    err = capsys.readouterr().err
    assert "validation set is empty" in err and "--n-validation" in err
    assert "validation.txt" in err
