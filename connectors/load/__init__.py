"""The loader: claims nothing twice, retrieves (PACS side), uploads and verifies (XNAT side),
records every attempt. Shared types in ``context``; ``runner`` orchestrates ``direct`` and ``dqr``.
"""
