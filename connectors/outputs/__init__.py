"""What people receive: the ingest CSV (``export``), the failure register (``failures``) and the
data-availability report (``report``, ``report_data``, ``report_html``, ``report_xlsx``).
"""
