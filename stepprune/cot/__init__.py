"""One completion -> thinking split, steps, token spans, entropy; end-of-run figures."""
