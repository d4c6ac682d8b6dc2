"""The sandbox's routes: Plural's API (``plural``), the bank's page (``acs``), the controls (``admin``)."""
