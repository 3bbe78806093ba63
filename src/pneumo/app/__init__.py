"""The clinic web app (Streamlit): ``main`` is the page (layout only), ``settings`` its
configuration, ``intake`` turns uploads and URLs into input items (``fetch`` gets URLs safely),
``classify`` predicts and explains, ``records`` stores, shows the history and audits,
``report`` exports CSV and PDF, ``display`` escapes names for the page, ``auth`` is the
password gate and ``launch`` starts the server (`pneumo app`)."""
