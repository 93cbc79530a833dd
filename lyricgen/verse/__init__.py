"""Spanish verse analysis on spelling alone (no dictionary, no model code).

- `rhyme`: words, stanzas, syllable nuclei, stress and rhyme keys of a word; rhyme between words.
- `meter`: metrical syllables of a verse line (synalepha, final-stress rule), built on `rhyme`.
- `scheme`: rhyme schemes ("ABBA ABBA CDC DCD"), annotation of a text against a scheme, and the
  cheap per-candidate judge a line-level generation controller needs.
"""
