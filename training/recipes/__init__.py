"""One module per recipe: ``ner`` (BIOES + CRF, distilled from an ensemble) and ``sentiment`` (CNN +
hashed n-gram linear ensemble). Each trains with :func:`training.loop.train`, ends with
:func:`training.ship.ship`, and reads its options from its typed config (``training.config``)."""
