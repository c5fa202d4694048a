"""`bcos-clip demo`: shapes world -> teacher pre-training -> B-cosified tower -> students -> evaluation ->
explanations -> grid pointing game -> report (``run.run_demo``), every stage cached."""
