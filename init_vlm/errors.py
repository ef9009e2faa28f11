"""The one error type of the stage: its message is a single line naming the source and the problem."""


class InitVLMError(Exception):
    """Bad input or a failed check in init_vlm. str(err) is one line: '<role> source <where>: <what is wrong>'."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause text held
