"""The parts of ``tools/ab_test.py``: the arms of a GAL config and the
metric they are compared on (``arms``), training and reading the runs with
progress lines (``runs``), the t-tests, report and curves (``report``)."""
