"""The PACS side: associations (``net``), C-ECHO and C-FIND (``find``), the query step
(``query``, ``query_record``), retrieval (``retrieve/``) and the storage SCP (``storage``,
``storage_scp``). Never imports the XNAT side.
"""
