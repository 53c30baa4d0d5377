"""The admin's files: the master patient list (``master_list``, ``repairs``, ``sheets``) and the
include/exclude rules (``rules``, ``rules_seed``, ``rules_workbook``).
"""
