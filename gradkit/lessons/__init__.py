"""Lesson-only helpers: exercise checks (``check``), the misconception quiz, the slide maker, and the
recurrent nets and character-level language model of lesson 08 (``recurrent``, ``charlm``)."""

from .exercises import check

__all__ = ["check"]
