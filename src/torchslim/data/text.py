"""A real English corpus that ships with torchslim, for text models measured without downloads.

``text_corpus()`` gives 1,000 sentences from the docstrings of CPython's standard library (PSF
License; ``data/embedded/python-docs``, built by ``scripts/make_text_corpus.py``). A sentence
encoder compressed by torchslim is compared with its float self on them: cosine of the
embeddings and top-10 neighbour overlap in retrieval (:mod:`torchslim.train.sentence`).
"""

from __future__ import annotations

from pathlib import Path

from torchslim.errors import ConfigError

CORPORA = {"python-docs": Path(__file__).parent / "embedded" / "python-docs" / "sentences.txt"}


def text_corpus(name: str = "python-docs", limit: int | None = None) -> list[str]:
    """The sentences of an embedded corpus, in their fixed order (the first ``limit``).

    Example:
        >>> sentences = text_corpus(limit=3)
        >>> len(sentences), all(s.endswith((".", "!", "?")) for s in sentences)
        (3, True)
        >>> len(text_corpus())
        1000
    """
    if name not in CORPORA:
        raise ConfigError(f"unknown corpus {name!r}; embedded: {sorted(CORPORA)}")
    lines = CORPORA[name].read_text(encoding="utf-8").splitlines()
    return lines[:limit] if limit is not None else lines
