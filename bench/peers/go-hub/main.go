// Command go-hub is the benchmark's Go peer: a gorilla/websocket hub in go-pusher's style
// (hub goroutine owning uid -> clients and group -> clients, one read pump and one write pump per
// client), with the same contract as deno-pusher: /ws?token= (uid and optional groups claims),
// /send?uid=&message=, POST /api/broadcast and POST /api/groups/{group}/send with {"message"}.
// It exists only to be measured.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// writeWait is how long one frame write may take before the client is dropped.
	writeWait = 10 * time.Second
	// sendBuffer is the per-client queue length in messages; a full queue drops the client.
	sendBuffer = 256
)

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024,
	CheckOrigin: func(r *http.Request) bool { return true }}

// client owns one connection; writePump is its only writer.
type client struct {
	hub    *hub
	uid    string
	groups []string
	conn   *websocket.Conn
	send   chan []byte
}

// publish asks the hub to push message to a uid's clients, a group's, or (both empty) everyone.
type publish struct {
	uid, group string
	message    []byte
	reply      chan int
}

// hub owns the indexes (every client, uid -> clients, group -> clients); only run touches them.
type hub struct {
	all        map[*client]bool
	byUID      map[string]map[*client]bool
	byGroup    map[string]map[*client]bool
	register   chan *client
	unregister chan *client
	publish    chan publish
}

func add(index map[string]map[*client]bool, key string, c *client) {
	set := index[key]
	if set == nil {
		set = make(map[*client]bool)
		index[key] = set
	}
	set[c] = true
}

func remove(index map[string]map[*client]bool, key string, c *client) {
	if set := index[key]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(index, key)
		}
	}
}

// drop removes c from every index and closes its queue, so its writePump ends.
func (h *hub) drop(c *client) {
	if !h.all[c] {
		return
	}
	delete(h.all, c)
	remove(h.byUID, c.uid, c)
	for _, g := range c.groups {
		remove(h.byGroup, g, c)
	}
	close(c.send)
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.all[c] = true
			add(h.byUID, c.uid, c)
			for _, g := range c.groups {
				add(h.byGroup, g, c)
			}
		case c := <-h.unregister:
			h.drop(c)
		case p := <-h.publish:
			set := h.all
			if p.uid != "" {
				set = h.byUID[p.uid]
			} else if p.group != "" {
				set = h.byGroup[p.group]
			}
			delivered := 0
			var full []*client
			for c := range set {
				select {
				case c.send <- p.message:
					delivered++
				default:
					full = append(full, c)
				}
			}
			for _, c := range full {
				h.drop(c)
			}
			p.reply <- delivered
		}
	}
}

func (c *client) readPump() {
	defer func() { c.hub.unregister <- c; c.conn.Close() }()
	c.conn.SetReadLimit(4096)
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

func (c *client) writePump() {
	defer c.conn.Close()
	for message := range c.send {
		c.conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err := c.conn.WriteMessage(websocket.TextMessage, message); err != nil {
			return
		}
	}
	c.conn.WriteMessage(websocket.CloseMessage, []byte{})
}

type claims struct {
	UID    string   `json:"uid"`
	Groups []string `json:"groups"`
}

// verify checks an HS256 JWT and returns its string uid claim and optional groups claim.
func verify(token string, secret []byte) (claims, error) {
	var c claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("token is not a JWT")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return c, fmt.Errorf("bad signature")
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(body, &c); err != nil || c.UID == "" {
		return c, fmt.Errorf("no uid claim")
	}
	return c, nil
}

// answer replies to a push call the way deno-pusher does: the count, 404 when nobody got it.
func answer(w http.ResponseWriter, delivered int) {
	w.Header().Set("Content-Type", "application/json")
	if delivered == 0 {
		w.WriteHeader(http.StatusNotFound)
	}
	fmt.Fprintf(w, `{"delivered":%d,"connections":%d}`, delivered, delivered)
}

// jsonMessage reads the {"message"} body of an /api push call.
func jsonMessage(r *http.Request) []byte {
	var body struct {
		Message string `json:"message"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	return []byte(body.Message)
}

func main() {
	port := os.Getenv("PORT")
	secret := []byte(os.Getenv("JWT_SECRET"))
	h := &hub{all: map[*client]bool{}, byUID: map[string]map[*client]bool{},
		byGroup: map[string]map[*client]bool{}, register: make(chan *client),
		unregister: make(chan *client), publish: make(chan publish)}
	go h.run()
	push := func(w http.ResponseWriter, p publish) {
		p.reply = make(chan int, 1)
		h.publish <- p
		answer(w, <-p.reply)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		who, err := verify(r.URL.Query().Get("token"), secret)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{hub: h, uid: who.UID, groups: who.Groups, conn: conn,
			send: make(chan []byte, sendBuffer)}
		h.register <- c
		go c.writePump()
		go c.readPump()
	})
	http.HandleFunc("/send", func(w http.ResponseWriter, r *http.Request) {
		uid := r.FormValue("uid")
		if uid == "" {
			answer(w, 0)
			return
		}
		push(w, publish{uid: uid, message: []byte(r.FormValue("message"))})
	})
	http.HandleFunc("/api/broadcast", func(w http.ResponseWriter, r *http.Request) {
		push(w, publish{message: jsonMessage(r)})
	})
	http.HandleFunc("/api/groups/", func(w http.ResponseWriter, r *http.Request) {
		group := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/groups/"), "/send")
		if r.Method != http.MethodPost || group == "" || strings.Contains(group, "/") ||
			!strings.HasSuffix(r.URL.Path, "/send") {
			http.NotFound(w, r)
			return
		}
		push(w, publish{group: group, message: jsonMessage(r)})
	})
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
