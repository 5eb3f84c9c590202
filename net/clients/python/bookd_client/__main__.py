"""``python -m bookd_client`` runs the bench (``python -m bookd_client.bench``)."""

import sys

from .bench import main

sys.exit(main())
