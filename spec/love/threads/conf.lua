-- The threads test game: no window, nothing but love.thread and the event queue.
function love.conf(t)
  t.identity = "instate-love-threads"
  t.window = false
  t.modules.audio, t.modules.sound, t.modules.joystick = false, false, false
  t.modules.physics, t.modules.video, t.modules.touch = false, false, false
  t.modules.graphics, t.modules.window = false, false
end
