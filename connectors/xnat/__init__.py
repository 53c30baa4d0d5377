"""The XNAT side: the client (``client``, ``dqr``), the streamed zip upload (``zipstream``) and
``sync``. Never imports the PACS side.
"""
