"""Retrieval of whole studies: ``Retriever`` (``retriever.py``) over C-GET or C-MOVE, with the
pynetdicom engine (``engine.py``), worker processes (``workers.py``), the DIMSE plumbing
(``dimse.py``), the reactor pace (``pace.py``) and the dcmtk back end (``dcmtk.py``)."""

from connectors.pacs.retrieve.engine import RetrievedStudy
from connectors.pacs.retrieve.retriever import Retriever

__all__ = ["RetrievedStudy", "Retriever"]
