"""Lesson-only helpers: exercise checks (``check``), the misconception quiz and the slide maker."""

from .exercises import check

__all__ = ["check"]
