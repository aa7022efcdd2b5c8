"""RobustDx on the hospital's DICOM network.

- :mod:`.store`: the per-tenant instance store and QIDO index (one ``ingest`` for
  STOW-RS, C-STORE and our own results);
- :mod:`.deid`: PS3.15 Annex E Basic Profile de-identification on ingest;
- :mod:`.qido`: QIDO-RS query parsing and DICOM JSON answers;
- :mod:`.sr` and :mod:`.pdf`: results as DICOM (TID 1500 SR, Encapsulated PDF);
- :mod:`.routing` and :mod:`.send`: routing rules, results sent back by C-STORE or STOW-RS;
- :mod:`.scp`: the C-ECHO / C-STORE SCP process.

Nothing here logs or raises with a header value: patient data stays in the files.
"""
