"""Analyses of trained and evaluated runs (issue 10), one module per analysis.

* :mod:`pluralign.analysis.collapse` — mean collapse: prediction entropy vs the humans', the spread of
  predictions across groups (pairwise JSD, variance of the expected answer) vs the humans' spread and
  their ratio, the *diversity kept*; from the evaluation files alone;
* :mod:`pluralign.analysis.topology` — routing signatures of a mixture-of-experts adapter (mean
  router probabilities per layer per group), a 2-D map coloured by Inglehart–Welzel zone, and
  silhouette / k-NN agreement of zones (and of the probe's age band, sex, education) against a
  shuffled-label baseline;
* :mod:`pluralign.analysis.overlap` — the share of top-k experts that different groups use for the
  same query, per layer, on value questions and on arithmetic (consensus) questions;
* :mod:`pluralign.analysis.zeroshot` — the zero-shot profile protocol: a split that holds out
  attribute combinations within each cultural zone and whole countries, and the full supervision
  vs zero-shot table of two evaluated runs;
* :mod:`pluralign.analysis.report` — ``pluralign report``: a static HTML report of runs.

:mod:`pluralign.analysis.runs` reads run folders; :mod:`pluralign.analysis.gates` records router
gates from outside the model (no change to the adapter code).
"""
