"""lockgate.image.build: the image build pipeline (see pipeline.py for the steps)."""
