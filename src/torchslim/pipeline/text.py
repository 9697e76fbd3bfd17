"""Text data of a recipe (``data: {name: "text:python-docs", seq: 128}``): unlabelled training
sentences, evaluation sentences, and the sentence-embedding metric the report shows.

There are no labels: a text recipe compresses a sentence encoder (a Hugging Face model named
``hf:PATH_OR_NAME``) and measures how close each stage's model stays to the recipe's starting
model - the cosine between their mean-pooled embeddings of the evaluation sentences, and the
overlap of each sentence's top-10 neighbours (:func:`torchslim.train.sentence.embedding_fidelity`).
Training sentences are never evaluation sentences: without ``train_text`` the corpus is split
(the first 80% train, the last 20% evaluate: 800 / 200 of the embedded ``python-docs``); with
``train_text: FILE`` (one sentence per line) the file trains, minus any line the corpus holds,
and the whole corpus evaluates.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from torchslim.data.text import CORPORA, text_corpus
from torchslim.errors import ConfigError
from torchslim.train.sentence import (
    EmbeddingFidelity,
    embedding_fidelity,
    encode,
    repeated,
)

if TYPE_CHECKING:
    from torchslim.pipeline.spec import DataSpec

TEXT_PREFIX = "text:"
EVAL_SHARE = 0.2  # of a corpus that also trains (no train_text): its last fifth evaluates
BATCH = 32  # sentences per evaluation, calibration and pruning-score batch
TOP_K = 10  # the neighbours the overlap compares

__all__ = ["TEXT_PREFIX", "TextData", "Tokenize", "is_text_name", "padded_batches",
           "read_sentences", "split_sentences"]  # fmt: skip


def is_text_name(name: str) -> bool:
    """Whether a data name is a text corpus (``text:NAME`` or ``text:FILE``).

    Example:
        >>> is_text_name("text:python-docs"), is_text_name("fashion-mnist")
        (True, False)
    """
    return name.startswith(TEXT_PREFIX)


def read_sentences(source: str, base_dir: str | Path = ".") -> list[str]:
    """The sentences of an embedded corpus (``python-docs``) or of a text file, one per line
    (blank lines skipped), relative to ``base_dir``.

    Example:
        >>> len(read_sentences("python-docs"))
        1000
    """
    if source in CORPORA:
        return text_corpus(source)
    path = Path(base_dir) / source
    if not path.is_file():
        raise ConfigError(f"{source}: neither an embedded corpus ({', '.join(sorted(CORPORA))}) "
                          "nor a text file of sentences, one per line")  # fmt: skip
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def split_sentences(spec: DataSpec, base_dir: str | Path = ".") -> tuple[list[str], list[str]]:
    """(training, evaluation) sentences of a text data spec; none of them in both.

    Example:
        >>> from torchslim.pipeline.spec import DataSpec
        >>> train, evaluation = split_sentences(DataSpec(name="text:python-docs"))
        >>> len(train), len(evaluation), bool(set(train) & set(evaluation))
        (800, 200, False)
    """
    corpus = read_sentences(spec.name[len(TEXT_PREFIX) :], base_dir)
    if spec.train_text is not None:
        evaluation = corpus
        held = set(evaluation)
        train = [s for s in read_sentences(spec.train_text, base_dir) if s not in held]
    else:
        if len(corpus) < 2:
            raise ConfigError(f"data.name: {spec.name} has {len(corpus)} sentence(s); it is "
                              "split into training and evaluation sentences, so give more "
                              "(or train_text: FILE)")  # fmt: skip
        n_eval = max(1, round(EVAL_SHARE * len(corpus)))
        train, evaluation = corpus[:-n_eval], corpus[-n_eval:]
    train = train[: spec.subset] if spec.subset else train
    evaluation = evaluation[: spec.test_subset] if spec.test_subset else evaluation
    if not train or len(evaluation) < 2:
        raise ConfigError(f"data: {len(train)} training and {len(evaluation)} evaluation "
                          "sentences; need at least 1 and 2")  # fmt: skip
    return train, evaluation


class Tokenize:
    """A collate function: a list of sentences -> the tokenizer's keyword tensors, truncated
    to ``seq`` tokens and padded to the longest (``padding=True``) or to ``seq``
    (``"max_length"``). A class, not a lambda, so DataLoader workers can pickle it."""

    def __init__(self, tokenizer: Any, seq: int, padding: bool | str = True) -> None:
        self.tokenizer, self.seq, self.padding = tokenizer, seq, padding

    def __call__(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(sentences), padding=self.padding, truncation=True,
                                   max_length=self.seq, return_tensors="pt"))  # fmt: skip


def padded_batches(tokenizer: Any, sentences: Sequence[str], seq: int,
                   batch_size: int = BATCH) -> list[dict[str, torch.Tensor]]:  # fmt: skip
    """``sentences`` tokenized in batches of ``batch_size``, each padded to ``seq`` tokens.

    Example:
        >>> def tokenizer(sentences, **kw):  # a stand-in: one token per word
        ...     ids = [[len(w) for w in s.split()] + [0] * kw["max_length"] for s in sentences]
        ...     return {"input_ids": torch.tensor([row[: kw["max_length"]] for row in ids])}
        >>> [b["input_ids"].shape for b in padded_batches(tokenizer, ["a b", "c", "d"], 4, 2)]
        [torch.Size([2, 4]), torch.Size([1, 4])]
    """
    tokenize = Tokenize(tokenizer, seq, "max_length")
    return [tokenize(sentences[i : i + batch_size])
            for i in range(0, len(sentences), batch_size)]  # fmt: skip


@dataclasses.dataclass
class TextData:
    """A text recipe's sentences and tokenizer, batched the ways the stages need them.

    Example:
        >>> from torchslim.pipeline.spec import DataSpec
        >>> def tokenizer(sentences, **kw):  # a stand-in: one token per word
        ...     ids = [[len(w) for w in s.split()][: kw["max_length"]] for s in sentences]
        ...     n = kw["max_length"] if kw["padding"] == "max_length" else max(map(len, ids))
        ...     pad = [row + [0] * (n - len(row)) for row in ids]
        ...     return {"input_ids": torch.tensor(pad), "attention_mask": torch.tensor(pad) > 0}
        >>> text = TextData.from_spec(DataSpec(name="text:python-docs", seq=16), tokenizer)
        >>> text.example["input_ids"].shape, len(text.evaluation_batches)
        (torch.Size([8, 16]), 7)
    """

    tokenizer: Any
    train: list[str]
    evaluation: list[str]
    seq: int = 128

    @classmethod
    def from_spec(cls, spec: DataSpec, tokenizer: Any, base_dir: str | Path = ".") -> TextData:
        train, evaluation = split_sentences(spec, base_dir)
        return cls(tokenizer, train, evaluation, spec.seq)

    def padded(self, sentences: Sequence[str], batch_size: int = BATCH) -> list[dict]:
        """Batches of ``sentences`` padded to ``seq`` tokens: what the ONNX file is measured on."""
        return padded_batches(self.tokenizer, sentences, self.seq, batch_size)

    def loader(self) -> DataLoader:
        """The training sentences, padded to each batch's longest (the trainer keeps the
        collate and sets the batch size)."""
        return DataLoader(self.train, batch_size=BATCH,  # type: ignore[arg-type]
                          collate_fn=Tokenize(self.tokenizer, self.seq))  # fmt: skip

    @cached_property
    def evaluation_batches(self) -> list[dict]:
        return self.padded(self.evaluation)

    @cached_property
    def example(self) -> dict[str, torch.Tensor]:
        """Eight evaluation sentences: the export's example (a real-data parity check)."""
        return self.padded(self.evaluation[:8], 8)[0]

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` evaluation sentences (repeated if too few), padded to ``seq``."""
        sentences = list(itertools.islice(itertools.cycle(self.evaluation), batch_size))
        return self.padded(sentences, batch_size)[0]

    def calib(self, sentences: int) -> list[dict]:
        """The first ``sentences`` training sentences, padded to ``seq``."""
        return self.padded(self.train[:sentences])

    def scoring(self, batches: int) -> list[dict]:
        """Training batches, each sentence twice, for the label-free taylor importance
        (:func:`~torchslim.train.sentence.contrastive_loss`)."""
        tokenize = Tokenize(self.tokenizer, self.seq)
        chunks = [self.train[i : i + BATCH] for i in range(0, len(self.train), BATCH)]
        return [repeated(tokenize(c)) for c in chunks[:batches]]

    def embed(self, model: Any) -> torch.Tensor:
        """Mean-pooled embeddings of the evaluation sentences by a model or its ONNX file
        (:class:`~torchslim.export.OnnxModule`)."""
        if isinstance(model, torch.nn.Module):
            model.eval()
        return encode(model, self.evaluation_batches)

    def fidelity(self, reference: torch.Tensor, model: Any) -> EmbeddingFidelity:
        """How close ``model``'s embeddings stay to ``reference`` (the starting model's)."""
        return embedding_fidelity(reference, self.embed(model), k=TOP_K)
