"""File input/output shared by every package: atomic writes (:mod:`tinydet.io.atomic`) and
checkpoint reading (:mod:`tinydet.io.checkpoint`)."""
