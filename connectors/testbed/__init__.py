"""Stand-ins for the hospital, for tests, benchmarks and ``pacs2xnat demo``: a synthetic
cohort (never real patients), a demo PACS, an Orthanc launcher and a stand-in XNAT."""
