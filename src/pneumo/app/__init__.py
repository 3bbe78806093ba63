"""The clinic web app (Streamlit): ``main`` is the page (layout only), ``logic`` checks input,
classifies, explains and stores, ``fetch`` gets image URLs safely, ``report`` exports CSV and
PDF, ``auth`` is the password gate and ``launch`` starts the server (`pneumo app`)."""
