"""Look-alikes of an uploaded face (ModelsLab's face_gen): prompt reading, photo checks,
inversion into the photoreal generator's style space and mixing.

``prompt`` and ``photo`` import neither torch nor the generator, so the web process can
answer a bad prompt or photo synchronously; ``lookalikes`` (torch) runs in the worker.
"""
