import sys

from napari_cryohet.cli import main

sys.exit(main())
