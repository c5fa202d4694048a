import sys

from bcos_clip.cli import main

sys.exit(main())
