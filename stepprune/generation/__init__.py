"""What generate, score, bench and the Ray workers share: sampling options, the engine and
its batches, and exact rescoring of generations rows (``sampling``, ``engine``, ``rescoring``)."""
