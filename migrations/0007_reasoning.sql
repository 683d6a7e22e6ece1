-- What a model thought on its way to an assistant message, kept so tool rounds replay it:
-- the reasoning text (DeepSeek V4 wants it back as reasoning_content) and the structured
-- reasoning_details (Gemini's thought signatures), as a JSON list.
ALTER TABLE messages ADD COLUMN reasoning TEXT;
ALTER TABLE messages ADD COLUMN reasoning_details TEXT;
