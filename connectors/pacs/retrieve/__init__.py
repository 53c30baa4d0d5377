"""Retrieval of whole studies: ``Retriever`` (``retriever.py``) over C-GET or C-MOVE, with the
pynetdicom engine (``engine.py``), worker processes (``workers.py``), the DIMSE plumbing
(``dimse.py``), the reactor pace (``pace.py``), the dcmtk back end (``dcmtk.py``), what a study
holds and the presentation contexts that bring it as stored (``holdings.py``) and the verdict on
what arrived (``judge.py``), a study paused at a window's end and continued (``resume.py``)."""

from connectors.pacs.retrieve.engine import RetrievedStudy
from connectors.pacs.retrieve.resume import RetrievalPaused
from connectors.pacs.retrieve.retriever import Retriever

__all__ = ["RetrievalPaused", "RetrievedStudy", "Retriever"]
