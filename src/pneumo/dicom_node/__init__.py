"""``pneumo dicom-node``: a DICOM Storage SCP that classifies the chest radiographs PACS sends
it and sends the results back as DICOM (a structured report and a heatmap overlay).

receive -> classify -> store record -> outbox -> send, one module per step:
``config`` (settings), ``spool`` (the on-disk inbox and outbox), ``receive`` (the SCP),
``results`` (the DICOM objects built with highdicom), ``process`` (classify and store),
``sender`` (C-STORE with retries), ``node`` (the running whole)."""
